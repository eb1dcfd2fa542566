"""networks.summary: every parameter counted once, trainable vs frozen apart, output shapes recorded."""

import torch
from torch import nn

from san_ext.networks.summary import summarize, summary


def _model():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding=1), nn.ReLU()))
    model = nn.Sequential(body, nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    for p in body[0].parameters():
        p.requires_grad_(False)
    return model


def test_counts_add_up_to_the_model_at_every_depth():
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    for depth in (0, 1, 2, 3):
        rows = summarize(model, x, max_depth=depth)
        assert sum(r.trainable for r in rows) == trainable
        assert sum(r.frozen for r in rows) == frozen == 8 * 3 * 9 + 8
        assert sum(r.buffers for r in rows) == sum(b.numel() for b in model.buffers())


def test_output_shapes_and_text_table():
    model = _model()
    rows = {r.name: r for r in summarize(model, torch.randn(2, 3, 16, 16), max_depth=2)}
    assert rows['0.3'].outputs == ((2, 4, 8, 8),)
    assert rows['2'].outputs == ((2, 2),)
    text = summary(model, torch.randn(2, 3, 16, 16))
    assert 'total' in text and '[2, 2]' in text
    assert text.count('\n') == len(rows) + 3  # header, rule, rows, rule, total
