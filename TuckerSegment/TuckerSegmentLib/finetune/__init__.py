"""`tucker-segment finetune`: nnU-Net's trainer on a Tucker-compressed TS network."""
