"""Data: COCO-format sources, transforms, loaders, the shapes dataset."""
