"""Audio corpora: layouts, hash splits, segment datasets on a global stream, corpus checks."""

from cmaudio.data.audio import audio_info, load_audio, resampled_length
from cmaudio.data.check import check_corpus, estimate_sigma_data, format_report
from cmaudio.data.dataset import (
    SegmentDataset,
    StreamSampler,
    dataset_from_config,
    epoch_permutation,
    item_seeds,
    load_utterance_audio,
    make_loader,
    splits_from_config,
)
from cmaudio.data.formats import CORPUS_URLS, FORMATS, Utterance, list_utterances
from cmaudio.data.split import split_hash, split_of, split_utterances

__all__ = [
    "CORPUS_URLS",
    "FORMATS",
    "SegmentDataset",
    "StreamSampler",
    "Utterance",
    "audio_info",
    "check_corpus",
    "dataset_from_config",
    "epoch_permutation",
    "estimate_sigma_data",
    "format_report",
    "item_seeds",
    "list_utterances",
    "load_audio",
    "load_utterance_audio",
    "make_loader",
    "resampled_length",
    "split_hash",
    "split_of",
    "split_utterances",
    "splits_from_config",
]
