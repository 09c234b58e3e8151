"""Numbers of the synthetic anatomy: level codes, nominal tissue HU, vertebral sizes.

All lengths in millimetres, intensities in *true* Hounsfield units (before the scanner's
global linear HU error is applied, see `scanner.py`).
"""

from __future__ import annotations

# Codes of the `levels` image (every vertebral body in view). L1..L4 are also the 1..4 of
# `labels` (config.LABEL_OF); `levels` keeps a separate code space so T12 and L1 never clash.
LEVEL_CODES = {
    "T9": 9, "T10": 10, "T11": 11, "T12": 12,
    "L1": 21, "L2": 22, "L3": 23, "L4": 24, "L5": 25, "L6": 26,
    "S": 30,
}
LEVEL_NAMES = {v: k for k, v in LEVEL_CODES.items()}
LUMBAR_LABELS = {"L1": 1, "L2": 2, "L3": 3, "L4": 4}

# Nominal true HU of soft tissues (native phase).
HU = {
    "air": -1000.0,
    "lung": -860.0,
    "fat": -100.0,
    "visceral_fat": -95.0,
    "skin": 40.0,
    "muscle": 50.0,
    "blood": 42.0,
    "liver": 58.0,
    "spleen": 46.0,
    "kidney": 32.0,
    "pancreas": 38.0,
    "bowel": 30.0,
    "bowel_fluid": 15.0,
    "bile": 12.0,
    "urine": 8.0,
    "csf": 8.0,
    "epidural_fat": -75.0,
    "disc": 85.0,
    "ligament": 65.0,
    "cartilage": 110.0,
    "feces": -40.0,
}

# Vertebral body (posterior/mid height H, width W left-right, depth D anterior-posterior),
# canal (width, depth), pedicle (width, height), transverse process length, spinous length.
# Adult means, size factor 1; per case scaled and jittered.
VERTEBRA_SHAPE = {
    #        H     W     D    canal_w canal_d ped_w ped_h  tp    sp
    "T9":  (21.0, 32.0, 27.0, 16.0, 15.0, 6.0, 13.0, 22.0, 34.0),
    "T10": (22.0, 34.0, 28.0, 16.0, 15.0, 6.0, 13.5, 20.0, 34.0),
    "T11": (23.5, 36.0, 29.0, 17.0, 15.5, 7.0, 15.0, 14.0, 32.0),
    "T12": (25.0, 39.0, 30.0, 18.0, 16.0, 7.5, 15.0, 8.0, 31.0),
    "L1": (26.5, 43.0, 31.0, 21.0, 16.5, 7.0, 15.0, 14.0, 25.0),
    "L2": (27.5, 45.0, 32.0, 21.5, 16.0, 8.0, 15.0, 20.0, 26.0),
    "L3": (28.0, 47.0, 33.0, 22.0, 15.5, 10.0, 15.0, 25.0, 26.0),
    "L4": (28.0, 49.0, 34.0, 23.0, 15.5, 12.0, 14.0, 22.0, 24.0),
    "L5": (27.0, 51.0, 34.0, 25.0, 15.0, 15.0, 13.0, 18.0, 21.0),
    "L6": (26.0, 50.0, 34.0, 25.0, 15.0, 15.0, 13.0, 18.0, 20.0),
}
# Disc mid heights between a level and the one below it.
DISC_BELOW = {
    "T9": 5.0, "T10": 5.5, "T11": 6.0, "T12": 7.0,
    "L1": 8.5, "L2": 9.5, "L3": 10.5, "L4": 11.0, "L5": 10.0, "L6": 9.0,
}
# Sacral segments S1..S5: height, body width, body depth, half-width of the alae.
SACRUM_SHAPE = [
    (27.0, 48.0, 32.0, 52.0),
    (22.0, 38.0, 24.0, 48.0),
    (18.0, 30.0, 18.0, 38.0),
    (14.0, 24.0, 13.0, 28.0),
    (11.0, 17.0, 10.0, 18.0),
]
# Level factor of the trabecular BMD relative to the case's L1-L3 mean.
BMD_LEVEL_FACTOR = {
    "T9": 1.07, "T10": 1.06, "T11": 1.05, "T12": 1.03,
    "L1": 1.00, "L2": 0.995, "L3": 0.985, "L4": 0.99, "L5": 1.00, "L6": 1.00,
    "S": 0.80,
}

VENDORS = {
    # nominal global HU error: HU_measured = a * HU_true + b
    "A": (1.00, 0.0),
    "B": (0.93, -8.0),
    "C": (1.07, 10.0),
}
