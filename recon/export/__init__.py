"""Exports of a run to other tools' formats (cameras: COLMAP text model, nerfstudio transforms.json)."""
