"""A real corpus's image as it is stored in its records: CLIP's transform, as JPEG.

The transform is CLIP's evaluation transform (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", ICML 2021, section 2.5: a resize
of the shorter side and a center crop; ``vlkg.preprocess.resize``, the function
``encode_images`` applies at evaluation), with three shortcuts that make a photo
four times cheaper to prepare:

* a JPEG larger than twice the output is decoded at a reduced scale
  (libjpeg's DCT-domain scaling, PIL's ``draft``: 1/2, 1/4 or 1/8, never below the
  output size), which costs a quarter of a full decode; the bicubic resize then
  starts from that image. A 640x480 COCO photo is decoded at 320x240 for 224 px;
  the result differs from the full-resolution transform by about one grey level
  on average (measured on photos and on the benchmark's generated images);
* the resize and the crop are one resampling of the cropped region (PIL's ``box``),
  the same filter taps as resizing the whole image and cropping it after;
* the result is stored as JPEG at quality 95 without chroma subsampling (colour
  names are what compositional benchmarks test, so colour keeps full resolution):
  about 0.4 ms to encode a 224 px image where PNG took 5 ms, and a quarter of
  PNG's bytes; a JPEG that already has the output size and is RGB or grey is kept
  byte for byte.

The records then say ``image_format: "jpeg"`` in their layout
(``vlkg.data.records.Layout``), and the input pipeline decodes them as JPEG.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from vlkg import files
from vlkg.data import corpora

FORMAT = "jpeg"  # the records' image_format
QUALITY = 95
_KEPT_MODES = ("RGB", "L")  # modes a kept JPEG may have: decode_jpeg(channels=3) reads them


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int, int, int]:
  """``(new_w, new_h, left, top, right, bottom)``: the size CLIP's transform resizes
  a ``width`` x ``height`` image to, and the crop in that resized image
  (``vlkg.preprocess.resize``'s arithmetic: the longer side truncated, the offsets
  rounded half to even)."""
  short, long = min(width, height), max(width, height)
  new_long = int(size * long / short)
  new_w, new_h = (size, new_long) if width <= height else (new_long, size)
  left, top = round((new_w - size) / 2), round((new_h - size) / 2)
  return new_w, new_h, left, top, left + size, top + size


def transform(image, size: int):
  """CLIP's transform of a PIL image (opened, not yet decoded) to ``size`` x
  ``size`` RGB; a JPEG is decoded at the smallest DCT scale that is not smaller."""
  from PIL import Image
  width, height = image.size
  new_w, new_h, left, top, right, bottom = crop_box(width, height, size)
  if image.format == "JPEG" and (new_w, new_h) != (width, height):
    image.draft("RGB", (size, size))  # both sides stay >= size, so the shorter one does
  if image.mode not in _KEPT_MODES:  # palette, alpha, CMYK, 16 bit: as convert("RGB")
    image = image.convert("RGB")
  if (new_w, new_h) == (width, height):
    out = image.crop((left, top, right, bottom))
  else:
    # The crop in source pixels; a drafted image's pixel j covers source pixels
    # [j * s, (j + 1) * s) (its last one a partial block).
    s = max(1, round(width / image.size[0]))
    sx, sy = width / new_w / s, height / new_h / s
    out = image.resize((size, size), Image.BICUBIC,
                       box=(left * sx, top * sy, right * sx, bottom * sy))
  return out.convert("RGB") if out.mode != "RGB" else out


def encode_jpeg(image) -> bytes:
  """A PIL RGB image as JPEG at ``QUALITY``, 4:4:4."""
  buf = io.BytesIO()
  image.save(buf, format="JPEG", quality=QUALITY, subsampling=0)
  return buf.getvalue()


def _read(item: corpora.Item) -> bytes | None:
  image = item.image
  if isinstance(image, str):
    if not files.isfile(image):
      return None
    with files.open(image, "rb") as f:
      return f.read()
  return image


def record_image(item: corpora.Item, size: int) -> bytes | None:
  """The JPEG bytes of the item's image after CLIP's transform to ``size``; None if
  its file does not exist. A corrupt image is a ``CorpusError`` that names it."""
  from PIL import Image
  where = f"image of item {item.key!r} ({item.source})"
  data: Any = _read(item)
  if data is None:
    return None
  if not isinstance(data, bytes):  # pixels (a decoded TFDS image)
    try:
      pixels = corpora.pixels(data)
    except ValueError as e:
      raise corpora.CorpusError(item.source, str(e), where) from None
    if min(pixels.shape[:2]) < 1:
      raise corpora.CorpusError(item.source, f"image has shape {pixels.shape}", where)
    return encode_jpeg(transform(Image.fromarray(pixels), size))
  path = item.image if isinstance(item.image, str) else item.source
  try:
    with Image.open(io.BytesIO(data)) as image:
      if min(image.size) < 1:
        raise corpora.CorpusError(path, f"image has size {image.size}", where)
      if image.format == "JPEG" and image.size == (size, size) and \
          image.mode in _KEPT_MODES:
        image.load()  # a truncated or corrupt file is an error here, as it would be
        return data
      return encode_jpeg(transform(image, size))
  except corpora.CorpusError:
    raise
  except Exception as e:  # PIL raises many types for a bad file
    raise corpora.CorpusError(path, f"corrupt or unreadable image ({e})", where) from None


def decode(data: bytes) -> np.ndarray:
  """uint8 ``[H, W, 3]`` of stored bytes (PNG or JPEG), as PIL decodes them."""
  from PIL import Image
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))
