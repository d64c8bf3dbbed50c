"""Model registry with lineage and aliases (`champion`, `challenger`), backed by GTO git tags."""
from lmops.registry.gto_registry import (
                                         ALIASES,
                                         Lineage,
                                         ModelVersion,
                                         Registry,
                                         data_hash,
                                         dir_hash,
                                         dvc_out_hash,
                                         lineage_for,
)

__all__ = ["ALIASES", "Lineage", "ModelVersion", "Registry", "data_hash", "dir_hash", "dvc_out_hash", "lineage_for"]
