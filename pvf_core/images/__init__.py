"""Images: the same question (prompt a pre-trained model or fine-tune it) for image classification.

    data.py     read a zip of images (one folder per label, or a CSV naming the files), checks, splits
    models.py   the bundled EfficientNet-Lite0 (ImageNet) backbone, converted once to safetensors; CLIP
    arms.py     label prompting (ImageNet classes named by the labels), CLIP zero/few-shot, linear head, LoRA
    evaluate.py any image arm on the test images -> the text side's ``EvalResult``, so ``compare`` applies
    commands.py what ``python -m pvf_core inspect|prompt|finetune|compare --images ZIP`` runs
"""
