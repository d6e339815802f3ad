"""Five-point similarity alignment of faces onto the 112x112 ArcFace template.

Every face that reaches EmoNet, detected or annotated, real or synthetic, goes
through `align_face`, so crops from all sources share one geometry: eyes, nose
tip and mouth corners land (in the least-squares sense) on the template points.
"""

import cv2
import numpy as np

# Reference points of the standard 112x112 ArcFace crop, (x, y) pixel order:
# left eye, right eye, nose tip, left mouth corner, right mouth corner
# ("left" is image-left).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

_TEMPLATE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, shift) taking src to dst.

  Umeyama's closed form, restricted to proper rotations so a face is never
  mirrored. Computed in float64 because the result feeds a warp whose error
  grows with image size.

  Args:
    src: [N, 2] points (x, y), N >= 2, not all equal.
    dst: [N, 2] target points.

  Returns:
    [2, 3] float64 matrix A with dst ~= A @ [x, y, 1].
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
    raise ValueError(f"expected two [N, 2] arrays, got {src.shape} and {dst.shape}")
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  src_c, dst_c = src - src_mean, dst - dst_mean
  src_var = (src_c**2).sum() / len(src)
  if src_var <= 0:
    raise ValueError("source points are all equal; no similarity is defined")
  cov = dst_c.T @ src_c / len(src)
  u, s, vt = np.linalg.svd(cov)
  # Flip the weakest axis when the best orthogonal fit is a reflection.
  d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rotation = (u * d) @ vt
  scale = (s * d).sum() / src_var
  shift = dst_mean - scale * rotation @ src_mean
  return np.concatenate([scale * rotation, shift[:, None]], axis=1)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
  """Warps one face onto the ArcFace template.

  Bilinear sampling; pixels that fall outside the source image are black
  (constant 0), the convention of the usual ArcFace preprocessing, so crops of
  faces at a frame edge look the same as those of other pipelines. Any input
  size works: small faces are upsampled, large ones downsampled.

  Args:
    image: uint8 [H, W, 3].
    landmarks: [5, 2] (x, y) in image pixels, in ARCFACE_TEMPLATE order.
    size: output side; the template is scaled by size / 112.

  Returns:
    uint8 [size, size, 3].
  """
  dst = ARCFACE_TEMPLATE * (size / _TEMPLATE_SIZE)
  matrix = similarity_transform(landmarks, dst)
  return cv2.warpAffine(
      image,
      matrix,
      (size, size),
      flags=cv2.INTER_LINEAR,
      borderMode=cv2.BORDER_CONSTANT,
      borderValue=0,
  )


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
  """Aligns the K faces of one image: landmarks [K, 5, 2] -> uint8 [K, size, size, 3]."""
  landmarks = np.asarray(landmarks)
  crops = [align_face(image, points, size) for points in landmarks]
  if not crops:
    return np.zeros((0, size, size, 3), np.uint8)
  return np.stack(crops)
