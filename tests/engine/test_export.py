"""torch.export of a zoo model in the "autograd" execution: the path the README recommends for export."""

from __future__ import annotations

import torch

import revzoo


def test_torch_export_of_a_reversible_vit_in_the_autograd_execution(builtin_plugins):
    torch.manual_seed(0)
    model = revzoo.create("vit-tiny-rev", img_size=32, depth=2, num_classes=5).eval()
    model.execution = "autograd"
    images = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (images,))
    other = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for batch in (images, other):
            torch.testing.assert_close(exported.module()(batch), model(batch), atol=1e-6, rtol=0)
    assert revzoo.get_form(model) == "reversible"
