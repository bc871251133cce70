"""Data sets (host-only: images, masks and files live in NumPy on the host; the model moves them).

``mrcnn_edu.data.shapes``  the toy shapes data set of lecture stage 8 (squares, circles, triangles)
``mrcnn_edu.data.coco``    COCO-format instance segmentation files: write and load any data set
``mrcnn_edu.data.images``  image files and masks: read any mode, resize and pad, map detections back
``mrcnn_edu.data.augment`` flips and scale jitter of an image and its masks together

A sample at this boundary is ``(image, masks, class_ids)``: ``image`` ``H x W x 3`` uint8, ``masks``
``G x H x W`` bool (one per object), ``class_ids`` ``G`` int64 in ``1..K`` (0 is the background). Boxes
``(x1, y1, x2, y2)`` come from the masks in continuous pixel coordinates (``images.boxes_from_masks``).

The submodules are imported on demand (``from mrcnn_edu.data.shapes import make_sample``), so that the
package itself needs neither scikit-image nor pycocotools.

``lecture_feature_map()`` is the lecture's 8 x 8 feature map of the RoIPool and RoIAlign slides (stage 4),
a file that ships inside the package, so the demo and the lessons find it in an installed copy too.
"""
from importlib import resources

__all__ = ["DatasetError", "lecture_feature_map"]


class DatasetError(ValueError):
    """A data set file is missing, unreadable or not valid COCO; the message names the file."""


def lecture_feature_map():
    """The lecture's 8 x 8 feature map (float64), as printed on the RoIPool slides."""
    import numpy as np
    with resources.files(__name__).joinpath("lecture_roi_8x8.txt").open() as f:
        return np.loadtxt(f)
