"""Data with membership ground truth: datasets, loaders, member / non-member splits, keep matrices."""

from miaudit.data.datasets import (
                                   ArrayDataset,
                                   data_dir_candidates,
                                   find_data_file,
                                   load_csv,
                                   load_dataset,
                                   load_image_folder,
                                   load_npz,
)
from miaudit.data.splits import MembershipSplit, make_split, paired_keep_matrix

__all__ = ["ArrayDataset", "load_dataset", "load_npz", "load_csv", "load_image_folder", "find_data_file",
           "data_dir_candidates", "MembershipSplit", "make_split", "paired_keep_matrix"]
