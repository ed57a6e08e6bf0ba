"""`Compose`, `ToTensor` and `Normalize` as torchvision computes them for the inputs the
reference packages give them (EfficientViT-SAM's `EfficientViTSam.transform`): an H×W×C uint8
array to a C×H×W float32 tensor divided by 255, then (x - mean) / std per channel in float32."""
import numpy as np
import torch


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


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def __call__(self, tensor):
        if not self.inplace:
            tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
