"""PIL-image `resize`/`to_pil_image` with torchvision's behaviour for PIL inputs (bilinear)."""
import numpy as np
from PIL import Image


def to_pil_image(pic):
    return Image.fromarray(np.asarray(pic))


def resize(img, size):
    # torchvision passes PIL images to Image.resize with (width, height) and bilinear filtering
    h, w = size
    return img.resize((int(w), int(h)), Image.BILINEAR)
