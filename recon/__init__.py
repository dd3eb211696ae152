"""Foundation layer: cameras, dataset IO, shared kernels, pose estimation, pipeline and benchmark.

Importing it sets nothing process-wide: the command-line entry point (apps/cli.py) chooses the OpenMP
settings that suit a shared 2-core machine.
"""

__version__ = "0.1.0"
