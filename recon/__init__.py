"""Foundation layer: cameras, dataset IO, shared kernels, pose estimation, pipeline and benchmark."""
import os as _os

# OpenMP threads that spin-wait stall badly when the 2 cores are shared (measured 25 ms -> 150 ms per splat
# step); passive waiting costs nothing measurable. Must be set before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
