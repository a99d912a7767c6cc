"""The only code that knows the HDF5 layout: atomic writes, locks, provenance, raw data."""
from .h5store import (GZIP, SCHEMA_VERSION, bulk_dir, channels, check_links, decode_names, encode_names, file_lock,
                      open_read, read_provenance, require, stamp_provenance, transaction, write_array)
from .raw import iter_spectra_blocks, read_dataset, read_raw, write_raw
from .recorded import recorded_calibration, recorded_energy

__all__ = ["GZIP", "SCHEMA_VERSION", "bulk_dir", "channels", "check_links", "decode_names", "encode_names", "file_lock",
           "open_read", "read_provenance", "require", "stamp_provenance", "transaction", "write_array",
           "iter_spectra_blocks", "read_dataset", "read_raw", "write_raw", "recorded_calibration", "recorded_energy"]
