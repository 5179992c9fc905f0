"""benchmarks/detection_demo.py: its generated scenes (reproducible, boxes inside the image, held-out
scenes from other objects and backgrounds) and a few training steps of its Faster R-CNN."""

import numpy as np
import pytest
import torch

from script_helpers import benchmark_module


@pytest.fixture(scope="module")
def demo():
    with benchmark_module("detection_demo") as module:
        yield module


@pytest.fixture
def generator(demo, shared_datasets):
    return demo.SceneGenerator(shared_datasets / "cifar10-jpeg-train.zip", shared_datasets / "imagenette-224-train.zip",
                               size=160, seed=0)


def test_scenes_are_reproducible_and_boxes_lie_inside(demo, generator, shared_datasets):
    again = demo.SceneGenerator(shared_datasets / "cifar10-jpeg-train.zip",
                                shared_datasets / "imagenette-224-train.zip", size=160, seed=0)
    other_seed = demo.SceneGenerator(shared_datasets / "cifar10-jpeg-train.zip",
                                     shared_datasets / "imagenette-224-train.zip", size=160, seed=1)
    assert generator.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                 "truck"]
    counts = []
    for split in ("train", "test"):
        for index in range(12):
            image, boxes, labels = generator.scene(split, index)
            same_image, same_boxes, same_labels = again.scene(split, index)
            assert np.array_equal(image, same_image) and np.array_equal(boxes, same_boxes)
            assert np.array_equal(labels, same_labels)
            assert image.shape == (160, 160, 3) and image.dtype == np.uint8
            assert 1 <= len(boxes) <= 3 and len(labels) == len(boxes)
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 160).all()
            assert (boxes[:, 2:] - boxes[:, :2] >= 20).all()  # 32..96 px, aspect within exp(+-0.3)
            assert ((labels >= 1) & (labels <= 10)).all()
            counts.append(len(boxes))
    assert len(set(counts)) > 1
    assert not np.array_equal(generator.scene("train", 0)[0], generator.scene("train", 1)[0])
    assert not np.array_equal(generator.scene("train", 0)[0], other_seed.scene("train", 0)[0])
    # the pasted object is the CIFAR image itself, scaled into its box: the box's pixels differ from the background's
    image, boxes, _ = generator.scene("test", 3)
    assert image.std() > 10


def test_held_out_scenes_use_other_objects_and_backgrounds(generator):
    assert not set(generator.objects["train"]) & set(generator.objects["test"])
    assert not set(generator.scenery["train"]) & set(generator.scenery["test"])
    assert len(generator.objects["test"]) == 5000 and len(generator.scenery["test"]) == 947


@pytest.mark.slow
def test_two_training_steps_and_an_evaluation(demo, generator):
    torch.manual_seed(0)
    detector = demo.build_detector("resnet18", None, len(generator.classes), 160, fpn_channels=32)
    losses = demo.train(detector, generator, steps=2, batch=2, lr=0.01, log_every=0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    scores = demo.evaluate(detector, generator, count=2, batch=2)
    assert set(scores) == {"map", "map_50", "map_75", "mar_100"}
    assert all(-1 <= v <= 1 for v in scores.values())  # pycocotools gives -1 where nothing is found
