"""Language identification over the 119 Qwen3 languages (FLORES-200 codes) plus ``other``.

Modules: ``languages`` (the label set), ``labelmap`` (raw model labels -> canonical codes),
``script`` (ISO 15924 from characters, Simplified/Traditional Han split), ``fasttext_lid``
(the batch backend for any fastText LID model), ``second_stage`` (the UDHR-trained model
for languages lid.176 cannot emit), ``stage`` (``LidStage`` and ``lid_distribution``),
``udhr`` (shipped labelled text), ``train_second_stage`` and ``fasttext_train`` (rebuild the
second-stage model reproducibly). README.md has the coverage table.
"""
