"""Chat templates, rendered in a sandbox.

A chat template comes from the model file (GGUF metadata ``tokenizer.chat_template`` or a
Hugging Face ``tokenizer_config.json``), so it is untrusted input: it is rendered in
Jinja2's ``ImmutableSandboxedEnvironment`` (cf. CVE-2024-34359, where a GGUF template ran
code through ``__class__``/``__subclasses__``). A template that fails to compile or tries
to escape the sandbox is refused when the model loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ...kernel.errors import InferenceFailed, InvalidInput, ModelLoadFailed

#: Used for models that carry no template and have none configured (ChatML).
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant", "tool", "developer")

_SAMPLE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled, sandboxed chat template."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", model_id: str = "") -> None:
        self.source = source
        self.model_id = model_id
        self._globals = {"bos_token": bos_token, "eos_token": eos_token}
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        try:
            self._template = env.from_string(source)
            self._template.render(messages=_SAMPLE, add_generation_prompt=True, **self._globals)
        except SecurityError as exc:
            raise ModelLoadFailed(
                f"the chat template of {model_id!r} tries to leave the sandbox and was refused: {exc}",
                details={"model": model_id, "reason": "unsafe_chat_template"},
            ) from exc
        except TemplateError as exc:
            # Some templates refuse the sample conversation (e.g. no system role): that is
            # fine as long as they compiled; only syntax errors and escapes are fatal.
            if isinstance(exc, jinja2.TemplateSyntaxError):
                raise ModelLoadFailed(
                    f"the chat template of {model_id!r} does not compile: {exc}",
                    details={"model": model_id, "reason": "invalid_chat_template"},
                ) from exc

    def render(self, messages: list[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render ``messages`` (validated) into a prompt."""
        checked = validate_messages(messages)
        try:
            return str(
                self._template.render(messages=checked, add_generation_prompt=add_generation_prompt, **self._globals)
            )
        except SecurityError as exc:
            raise InferenceFailed(f"the chat template of {self.model_id!r} was stopped by the sandbox") from exc
        except TemplateError as exc:
            raise InvalidInput(
                f"the chat template of {self.model_id!r} refused these messages: {exc}",
                details={"model": self.model_id},
            ) from exc


def validate_messages(messages: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Check chat messages: a non-empty list of ``{role, content}`` with known roles."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list", details={"field": "messages"})
    checked = []
    for n, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"messages[{n}] must be an object", details={"field": f"messages[{n}]"})
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidInput(
                f"messages[{n}].role must be one of {', '.join(ROLES)}", details={"field": f"messages[{n}].role"}
            )
        if not isinstance(content, str):
            raise InvalidInput(f"messages[{n}].content must be a string", details={"field": f"messages[{n}].content"})
        checked.append({"role": role, "content": content})
    return checked
