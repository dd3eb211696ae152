"""Foundation layer: cameras, dataset IO, shared kernels, pose estimation, pipeline and benchmark."""
__version__ = "0.1.0"
