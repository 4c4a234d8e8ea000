"""The names the papers give the datasets and backbones, as the report's tables show them.

The papers' numbers live beside the studies that regenerate them: each study's ``tables:`` in
recipes/studies/*.yaml declares the published values its cells are compared with.
"""

from __future__ import annotations

TITLES = {
    "breast": "BreastMNIST", "retina": "RetinaMNIST", "pneumonia": "PneumoniaMNIST", "derma": "DermaMNIST",
    "oct": "OCTMNIST", "organa": "OrganAMNIST", "fracture3d": "FractureMNIST3D", "adrenal3d": "AdrenalMNIST3D",
    "nodule3d": "NoduleMNIST3D", "vessel3d": "VesselMNIST3D", "vit-s": "ViT-S", "vit3d": "ViT-3D",
    "vivit-s": "ViViT-S", "vivit-m": "ViViT-M", "vit-mini": "ViT-mini", "vit-t": "ViT-T", "vit-b": "ViT-B",
    "clip-l14": "CLIP ViT-L/14",
}
