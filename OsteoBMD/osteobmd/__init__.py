"""OsteoBMD: fully automatic lumbar BMD from routine CT (no Slicer import here).

The pipeline steps live in one module each (see docs/DESIGN.md); `pipeline.run_case`
chains them and `cli` is the command line the Slicer panel also runs.
"""

__version__ = "0.1.0"
