"""nnU-Net trainer classes of TuckerSegment; nnU-Net finds them by name through its
``nnUNet_extTrainer`` search path (see ts/training.py), in every DDP process too."""
