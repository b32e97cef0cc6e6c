"""Data with membership ground truth: datasets, loaders, member / non-member splits, keep matrices."""

from miaudit.data.datasets import (
                                   ArrayDataset,
                                   data_dir_candidates,
                                   find_data_file,
                                   load_dataset,
                                   load_image_folder,
                                   load_npz,
)
from miaudit.data.splits import MembershipSplit, make_split, paired_keep_matrix
from miaudit.data.tabular import TabularPreprocessor, load_tabular, read_table

__all__ = ["ArrayDataset", "load_dataset", "load_npz", "load_tabular", "read_table", "TabularPreprocessor",
           "load_image_folder", "find_data_file", "data_dir_candidates",
           "MembershipSplit", "make_split", "paired_keep_matrix"]
