"""`Compose`, `ToTensor`, `Normalize` and `Resize` as torchvision computes them for the inputs
the reference packages give them (EfficientViT-SAM's `EfficientViTSam.transform`, SAM 2's
`SAM2Transforms`): an H×W×C uint8 array to a C×H×W float32 tensor divided by 255, then
(x - mean) / std per channel in float32; a float tensor resized bilinearly with antialiasing
(torchvision's tensor path since 0.17). `Normalize` and `Resize` are modules whose forward
TorchScript compiles, as SAM 2 scripts them."""
from typing import List

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    def __call__(self, pic):
        if not isinstance(pic, np.ndarray):
            pic = np.asarray(pic)  # a PIL image reads as H×W×C (or H×W) uint8
        if pic.ndim == 2:
            pic = pic[:, :, None]
        # torchvision: from_numpy of the HWC->CHW transpose, made contiguous, then float / 255
        img = torch.from_numpy(np.ascontiguousarray(pic.transpose((2, 0, 1)))).contiguous()
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img


class Normalize(nn.Module):
    def __init__(self, mean, std, inplace=False):
        super().__init__()
        self.mean: List[float] = [float(v) for v in mean]
        self.std: List[float] = [float(v) for v in std]
        self.inplace = inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


class Resize(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size: List[int] = [int(v) for v in size]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        batched = img.dim() == 4
        x = img if batched else img.unsqueeze(0)
        x = F.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=True
        )
        return x if batched else x.squeeze(0)
