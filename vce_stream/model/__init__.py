"""The model: a differential-attention BiomedCLIP image classifier and the model bundle it ships in.

Modules: `config` (ArchConfig and presets), `diff_attention` (the attention block and the exact
conversion from pretrained attention), `backbone` (timm trunk in open_clip's layout, pretrained loading),
`heads` (excitation, classifier and contrastive heads), `classifier` (the trainable model and the
uint8-in, probabilities-out wrapper engines export), `bundle` (the directory users copy: its format,
loading and saving), `random_bundle` (bundles with random weights), `cli` (`info`, `demo-bundle`).
"""
