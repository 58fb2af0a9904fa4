"""A new DICOM instance for tests that write their own files: file meta, SOP class and UID set."""

from __future__ import annotations

import pydicom


def new_instance(sop_class: str) -> pydicom.Dataset:
    """An empty dataset of ``sop_class`` with a fresh SOP instance UID, explicit VR little endian."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds
