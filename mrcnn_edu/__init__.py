"""mrcnn-edu: Mask R-CNN from first principles in NumPy, one stage of the lecture at a time."""
__version__ = "0.1.0"
