"""Data sets (host-only: images, masks and files live in NumPy on the host; the model moves them).

``mrcnn_edu.data.shapes``  the toy shapes data set of lecture stage 8 (squares, circles, triangles)
``mrcnn_edu.data.coco``    COCO-format instance segmentation files: export the shapes, load any data set

A sample at this boundary is ``(image, masks, class_ids)``: ``image`` ``H x W x 3`` uint8, ``masks``
``G x H x W`` bool (one per object), ``class_ids`` ``G`` int64 in ``1..K`` (0 is the background). Boxes
``(x1, y1, x2, y2)`` come from the masks in continuous pixel coordinates (``shapes.boxes_from_masks``).

The submodules are imported on demand (``from mrcnn_edu.data.shapes import make_sample``), so that the
package itself needs neither scikit-image nor pycocotools.
"""
