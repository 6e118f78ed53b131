"""Recurrent layers: LSTM, GRU, RNN; ReverseSequence; the Loop/Scan refusal."""

from __future__ import annotations
