"""Peak memory of the service while it seals one large PDF (about 100 MiB) PAdES B-T.

The PDF is checked with qpdf before it is sent. The upload is streamed from
the file and the download streamed to a file, so the client keeps neither in
memory. The signed output must pass pdfsig and qpdf.
"""

from __future__ import annotations

from bench.config import MIB
from bench.context import RunContext
from bench.documents import write_large_pdf
from bench.figures import Baseline, Figure, compare
from bench.load import client_session
from bench.memory import ProcessSampler
from bench.pades import NativeClient
from bench.verify import pdfsig_check, qpdf_check

__all__ = ["measure_large_pdf"]

MEMORY_GOAL = "<= 1.5"
# Seconds py-spy records beyond the measured signing time of the large PDF.
PROFILE_MARGIN_SECONDS = 5.0


async def measure_large_pdf(ctx: RunContext) -> list[Figure]:
    config = ctx.config
    source = ctx.work_dir / "large.pdf"
    file_bytes = write_large_pdf(source, config.large_pdf_bytes)
    qpdf_check(source)
    output = ctx.work_dir / "large-signed.pdf"
    title = f"Biên nhận thử nghiệm, tệp {file_bytes / MIB:.0f} MiB"

    async with client_session(2) as session:
        native = NativeClient(ctx.home, session)
        with ProcessSampler(ctx.service.pid, config.memory_sample_seconds) as sampler:
            run = await native.sign(source, output, title)
        usage = sampler.usage
        assert usage is not None

    errors = 0
    first_error = None
    try:
        pdfsig_check(output, ctx.nss_dir)
        qpdf_check(output)
    except RuntimeError as exc:
        errors, first_error = 1, str(exc)

    figure = Figure(
        "memory.sign_100mb_pdf", usage.increase / MIB, "MiB",
        "peak minus idle resident memory of the service's processes while one large PDF is submitted, sealed "
        "PAdES B-T and downloaded",
        extra={"file_bytes": file_bytes, "idle_mib": usage.idle_rss / MIB, "peak_mib": usage.peak_rss / MIB,
               "high_water_increase_mib": usage.high_water_increase / MIB,
               "signing_seconds": run.seconds, "samples": usage.samples, "signed_bytes": output.stat().st_size,
               **usage.as_extra(), "errors": errors, **({"first_error": first_error} if first_error else {})},
    )

    async def rerun(_seconds: float) -> None:
        async with client_session(2) as session:
            await NativeClient(ctx.home, session).sign(source, ctx.work_dir / "large-signed-profile.pdf", title)

    ctx.reruns[figure.name] = (rerun, run.seconds + PROFILE_MARGIN_SECONDS)
    return [compare(figure, Baseline("large_pdf.file_size", file_bytes / MIB, "MiB"), MEMORY_GOAL)]
