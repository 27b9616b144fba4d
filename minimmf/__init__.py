"""minimmf: the pieces of MMF (facebookresearch/mmf) that the Charades
MMFTransformer needs, ported to current PyTorch, with MMF's names, config
schema and checkpoint layout."""

__version__ = "0.1.0"
