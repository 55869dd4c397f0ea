"""
Benchmark against PyTorch
=========================

The time ratios of fastconv to PyTorch 2.13 (CPU) on the benchmark workloads, forward plus
backward, at 1 and 2 threads, in float32 and float64, with the plain-NumPy im2col + matmul
that courses teach beside them. Below 1 is faster than PyTorch.

Nothing is measured here: the figure is rendered from the newest result file committed in
``benchmarks/results/`` by the benchmark's own code, ``python -m fastconv bench --load FILE
--plot FILE`` (the text table below is what that command prints). To measure your machine::

    pip install "fastconv[bench]"
    python -m fastconv bench --limits --threads 1,2 --json results.json --plot ratios.png
"""

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from fastconv.__main__ import main as fastconv_cli

# docs/conf.py sets FASTCONV_REPO; run by hand, this file sits in docs/gallery/.
repo = Path(os.environ.get("FASTCONV_REPO") or Path(__file__).resolve().parents[2])
results = sorted((repo / "benchmarks" / "results").glob("*.json"))
if not results:
    raise FileNotFoundError(f"no benchmark results (*.json) in {repo / 'benchmarks' / 'results'}")
newest = results[-1]
print(f"rendering {newest.relative_to(repo)}")

# %%
with tempfile.TemporaryDirectory() as tmp:
    png = Path(tmp) / "ratios.png"
    status = fastconv_cli(["bench", "--load", str(newest), "--plot", str(png)])
    if status != 0:
        raise RuntimeError(f"python -m fastconv bench --load exited with {status}")
    image = plt.imread(png)

# %%
# The PNG that ``--plot`` wrote, shown at its own size.
dpi = 110
height, width = image.shape[:2]
fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
ax = fig.add_axes((0, 0, 1, 1))
ax.imshow(image, interpolation="none")
ax.axis("off")
plt.show()
