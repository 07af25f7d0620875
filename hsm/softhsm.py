"""SoftHSM2 set-up: the configuration file and token initialisation.

SoftHSM2 reads the file named by ``SOFTHSM2_CONF`` once, when the module is
initialised (C_Initialize), so the variable must be set before the first
``pkcs11.lib()`` call of the process.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

import structlog

from hsm.errors import HsmError

__all__ = ["TEMPLATE_PATH", "init_softhsm_token", "write_softhsm_config"]

log = structlog.get_logger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "softhsm-config" / "softhsm2.conf.template"
TOKENDIR_PLACEHOLDER = "@TOKENDIR@"

# Used when the package is installed without the softhsm-config folder.
# Keep it identical to softhsm-config/softhsm2.conf.template; a test compares them.
BUILTIN_TEMPLATE = """\
# SoftHSM2 configuration for signserver.
# hsm.write_softhsm_config() replaces @TOKENDIR@ with the token directory.
# Point SOFTHSM2_CONF at the written file before the PKCS#11 module is loaded.

directories.tokendir = @TOKENDIR@
objectstore.backend = file

# ERROR, WARNING, INFO or DEBUG; SoftHSM logs to syslog.
log.level = ERROR

# Whether slots report CKF_REMOVABLE_DEVICE.
slots.removable = false
"""

# Limits enforced by softhsm2-util 2.6: a token label fills the 32-byte
# CK_TOKEN_INFO.label field, and a PIN has 4 to 255 characters.
MAX_TOKEN_LABEL_BYTES = 32
MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 255

SOFTHSM_UTIL_TIMEOUT_SECONDS = 60

_LABEL_LINE = re.compile(r"^\s*Label:\s*(.*?)\s*$", re.MULTILINE)


def write_softhsm_config(conf_path: Path, token_dir: Path, template: Path | None = None) -> None:
    """Write a SoftHSM2 configuration file whose token directory is ``token_dir``.

    The template is ``template`` if given, else softhsm-config/softhsm2.conf.template,
    else the identical built-in text. ``token_dir`` is created with mode 0700
    because it will contain the token's key material.
    """
    if template is not None:
        text = template.read_text(encoding="utf-8")
    elif TEMPLATE_PATH.is_file():
        text = TEMPLATE_PATH.read_text(encoding="utf-8")
    else:
        text = BUILTIN_TEMPLATE

    if TOKENDIR_PLACEHOLDER not in text:
        source = template or TEMPLATE_PATH
        raise ValueError(f"SoftHSM2 template {source} has no {TOKENDIR_PLACEHOLDER} placeholder")

    token_dir = Path(token_dir).resolve()
    if "\n" in str(token_dir):
        raise ValueError("token_dir must not contain a line break: SoftHSM2 reads its configuration line by line")

    token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf_path = Path(conf_path)
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(text.replace(TOKENDIR_PLACEHOLDER, str(token_dir)), encoding="utf-8")
    log.info("softhsm.config.written", conf_path=str(conf_path), token_dir=str(token_dir))


def init_softhsm_token(conf_path: Path, label: str, so_pin: str, user_pin: str, module_path: str) -> None:
    """Initialise a token labelled ``label`` in the first free slot, unless one exists.

    The PINs are typed into softhsm2-util's prompts through a pseudo-terminal
    instead of ``--so-pin``/``--pin``, so they never appear in the process
    table. A lock file next to ``conf_path`` stops two processes from creating
    two tokens with the same label. Raises HsmError with softhsm2-util's
    stderr, PINs removed, when the tool fails.
    """
    _validate_token_label(label)
    _validate_pin("so_pin", so_pin)
    _validate_pin("user_pin", user_pin)

    env = dict(os.environ, SOFTHSM2_CONF=str(conf_path))
    lock_path = Path(f"{conf_path}.lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)

        if label in _token_labels(env, module_path):
            log.info("softhsm.token.exists", token_label=label, conf_path=str(conf_path))
            return

        command = ["softhsm2-util", "--init-token", "--free", "--label", label, "--module", module_path]
        # softhsm2-util prompts for each PIN twice: SO PIN, SO PIN again, user PIN, user PIN again.
        answers = f"{so_pin}\n{so_pin}\n{user_pin}\n{user_pin}\n"
        returncode, stdout, stderr = _run_with_terminal_input(command, env, answers)

    if returncode != 0:
        message = _remove_secrets(stderr.strip() or stdout.strip(), (so_pin, user_pin))
        raise HsmError(f"softhsm2-util --init-token failed for token {label!r} (exit status {returncode}): {message}")
    log.info("softhsm.token.initialized", token_label=label, conf_path=str(conf_path))


def _token_labels(env: dict[str, str], module_path: str) -> list[str]:
    command = ["softhsm2-util", "--show-slots", "--module", module_path]
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=SOFTHSM_UTIL_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HsmError(f"softhsm2-util --show-slots failed: {exc}") from exc
    if completed.returncode != 0:
        raise HsmError(
            f"softhsm2-util --show-slots failed (exit status {completed.returncode}): {completed.stderr.strip()}"
        )
    return _LABEL_LINE.findall(completed.stdout)


def _run_with_terminal_input(command: list[str], env: dict[str, str], answers: str) -> tuple[int, str, str]:
    """Run ``command`` with a pseudo-terminal as stdin, preloaded with ``answers``.

    softhsm2-util reads PINs with tcgetattr/tcsetattr on stdin, which fail on a
    pipe. Its tcsetattr uses TCSANOW, so input written before the prompt is
    kept. The terminal echoes input to the master side, which is discarded
    unread when it is closed.
    """
    master_fd, slave_fd = os.openpty()
    try:
        try:
            process = subprocess.Popen(
                command, stdin=slave_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
            )
        except OSError as exc:
            raise HsmError(f"cannot run {command[0]}: {exc}") from exc
        finally:
            os.close(slave_fd)

        os.write(master_fd, answers.encode("utf-8"))
        try:
            stdout, stderr = process.communicate(timeout=SOFTHSM_UTIL_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.communicate()
            raise HsmError(f"{' '.join(command[:2])} timed out after {SOFTHSM_UTIL_TIMEOUT_SECONDS} s") from exc
    finally:
        os.close(master_fd)
    return process.returncode, stdout, stderr


def _remove_secrets(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _validate_token_label(label: str) -> None:
    encoded = label.encode("utf-8")
    if not encoded or len(encoded) > MAX_TOKEN_LABEL_BYTES:
        raise ValueError(f"token label {label!r} must be 1 to {MAX_TOKEN_LABEL_BYTES} bytes in UTF-8")
    if label != label.strip():
        raise ValueError(f"token label {label!r} must not start or end with a space: PKCS#11 pads labels with spaces")


def _validate_pin(name: str, pin: str) -> None:
    # The message names the argument, never the PIN itself.
    if not MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH:
        raise ValueError(f"{name} must have {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} characters, got {len(pin)}")
    if "\n" in pin or "\r" in pin or "\0" in pin:
        raise ValueError(f"{name} must not contain a line break or NUL character")
