"""albertzh: Chinese ALBERT from raw corpus to pretrained and finetuned model."""

__version__ = "0.1.0"
