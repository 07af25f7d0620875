"""Signature formats: PAdES B-T on PDF, the service's RFC 3161 TSA, and validation.

Modules: ``keys`` (HSM-backed keys for pyHanko), ``pdf_inspect`` (opening
untrusted PDFs), ``stamp`` and ``fonts`` (the visible Vietnamese stamp),
``pades`` (signing), ``tsa`` (time-stamp tokens), ``validate`` (checks
before release) and ``errors``.
"""

__all__: list[str] = []
