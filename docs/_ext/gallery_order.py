"""The order of the gallery's examples: from first steps to the benchmark.

sphinx-gallery takes the class by name (``within_subsection_order`` in conf.py) and calls
an instance on each example's file name. Examples not listed come after those listed, by name.
"""

ORDER = ["plot_train_digits.py", "plot_autoencoder.py", "plot_benchmark.py"]


class GalleryOrder:
    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        return (ORDER.index(filename) if filename in ORDER else len(ORDER), filename)
