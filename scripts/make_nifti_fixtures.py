"""Writes the small NIfTI files in tests/fixtures/nifti/ with nibabel, and nibabel's reading
of each (get_fdata, affine, aff2axcodes, as_closest_canonical) as JSON beside them.

Run: /work/pyenv/bin/python scripts/make_nifti_fixtures.py   (nibabel 5.4.2, numpy 2)
Read by crates/brain-ldm-nifti/tests/nibabel_fixtures.rs.
"""
import json
import os

import nibabel as nib
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "nifti")
os.makedirs(OUT, exist_ok=True)


def rot(axis, angle):
    c, s = np.cos(angle), np.sin(angle)
    m = np.eye(3)
    p, q = [(1, 2), (0, 2), (0, 1)][axis]
    m[p, p] = c
    m[q, q] = c
    m[p, q] = -s
    m[q, p] = s
    return m


def oblique_affine():
    # Permuted and flipped axes (voxel i ~ -y, j ~ +z, k ~ -x), tilted by a few degrees,
    # voxel sizes 1.5, 2, 2.5.
    perm = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float)
    r = rot(0, 0.1) @ rot(2, -0.05) @ perm
    a = np.eye(4)
    a[:3, :3] = r @ np.diag([1.5, 2.0, 2.5])
    a[:3, 3] = [10.0, -20.0, 5.0]
    return a


def record(name, path, img_cls):
    img = nib.load(path)
    data = img.get_fdata()
    canon = nib.as_closest_canonical(img)
    cdata = canon.get_fdata()
    return {
        "file": name,
        "shape": list(img.shape),
        "affine": img.affine.tolist(),
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
        # Values in file order (Fortran order: i fastest), like the NIfTI data block.
        "data_fortran": data.ravel(order="F").tolist(),
        "canonical_shape": list(canon.shape),
        "canonical_affine": canon.affine.tolist(),
        "canonical_data_fortran": cdata.ravel(order="F").tolist(),
        "sform_code": int(img.header["sform_code"]),
        "qform_code": int(img.header["qform_code"]),
        "class": img_cls,
    }


cases = []

# 1. NIfTI-2, big-endian int16 with scl_slope/scl_inter, qform only (oblique), .nii
shape = (4, 5, 6)
raw = (np.arange(np.prod(shape)).reshape(shape, order="F") - 50).astype(">i2")
hdr = nib.Nifti2Header(endianness=">")
img = nib.Nifti2Image(raw, None, hdr)
img.set_qform(oblique_affine(), code=1)
img.set_sform(None, code=0)
img.header.set_data_dtype(">i2")
name = "n2_be_int16_scaled_qform.nii"
nib.save(img, os.path.join(OUT, name))
# nibabel chooses its own scaling on save (none for int16 data); set scl_slope/scl_inter
# in the saved header so that reading must apply them.
with open(os.path.join(OUT, name), "r+b") as f:
    h = nib.Nifti2Header.from_fileobj(f)
    h["scl_slope"] = 0.5
    h["scl_inter"] = -3.0
    f.seek(0)
    h.write_to(f)
cases.append(record(name, os.path.join(OUT, name), "Nifti2Image"))

# 2. NIfTI-1 pair .hdr/.img, big-endian float64, 4D (2 volumes), sform only (code 4, MNI)
shape4 = (3, 4, 2, 2)
raw = (np.arange(np.prod(shape4)).reshape(shape4, order="F") * 0.25 - 1.0).astype(">f8")
hdr = nib.nifti1.Nifti1PairHeader(endianness=">")
hdr.set_data_dtype(">f8")
aff = np.diag([-2.0, 2.0, 3.0, 1.0])
aff[:3, 3] = [30.0, -40.0, -12.0]
img = nib.Nifti1Pair(raw, aff, hdr)
img.set_sform(aff, code=4)
img.set_qform(None, code=0)
name = "n1_be_f64_4d_pair.hdr"
nib.save(img, os.path.join(OUT, name))
rec = record(name, os.path.join(OUT, name), "Nifti1Pair")
cases.append(rec)

# 3. NIfTI-1 .nii.gz, little-endian uint8, no sform/qform: affine from pixdim
shape = (5, 3, 4)
raw = (np.arange(np.prod(shape)).reshape(shape, order="F") * 4).astype("u1")
img = nib.Nifti1Image(raw, None)
img.header.set_zooms((2.0, 3.0, 4.0))
img.set_sform(None, code=0)
img.set_qform(None, code=0)
name = "n1_le_u8_pixdim.nii.gz"
nib.save(img, os.path.join(OUT, name))
cases.append(record(name, os.path.join(OUT, name), "Nifti1Image"))

with open(os.path.join(OUT, "nibabel_expected.json"), "w") as f:
    json.dump({"nibabel": nib.__version__, "numpy": np.__version__, "cases": cases}, f, indent=1)
print("wrote", [c["file"] for c in cases])
