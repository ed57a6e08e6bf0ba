"""Greedy NMS written as a plain loop, checking segany's vectorised version. Ties in score go
to the lower index (stable sort), segany's rule; see the package docstring for how this was
compared with real torchvision."""
import torch


def box_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(a, b):
    x0 = torch.maximum(a[0], b[:, 0])
    y0 = torch.maximum(a[1], b[:, 1])
    x1 = torch.minimum(a[2], b[:, 2])
    y1 = torch.minimum(a[3], b[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    return inter / (area_a + box_area(b) - inter)


def nms(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= _iou(boxes[i].float(), boxes.float()) > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes, scores, idxs, iou_threshold):
    keep_all = []
    for c in torch.unique(idxs).tolist():
        sel = torch.nonzero(idxs == c).flatten()
        keep_all.append(sel[nms(boxes[sel], scores[sel], iou_threshold)])
    if not keep_all:
        return torch.empty(0, dtype=torch.int64)
    keep = torch.cat(keep_all)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]
