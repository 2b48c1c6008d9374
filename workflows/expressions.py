"""A small evaluator for the expressions Argo Workflows evaluates, as the local executor needs them.

Two languages meet in Argo templates:

* ``expr`` (expr-lang), used in ``{{=...}}`` tags, ``valueFrom.expression``, ``retryStrategy.expression``
  and ``depends``-like logic: literals, member access (``a.b``, ``a['b-c']``), function calls
  (``jsonpath``, ``asInt``, ``asFloat``, ``string``, ``toJson``, ``len``), ``! not``, ``== != < <= > >=``,
  ``&& || and or``, ``+ - * / %``, ``in``, ternary ``c ? a : b`` and parentheses.
* ``govaluate``, used for ``when`` after ``{{...}}`` substitution: the same operators; a bare word that
  is not ``true``/``false`` compares as a string (``promoted == promoted``), as Argo's examples rely on.

Anything else raises :class:`ExpressionError` naming the expression, so an unsupported construct fails
loudly instead of being guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!()\[\].,?:])
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
)""",
    re.VERBOSE,
)


def _tokenize(src: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(src):
        if src[pos:].strip() == "":
            break
        match = _TOKEN.match(src, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot parse {src!r} at position {pos}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Missing:
    """A name the environment does not define (govaluate mode turns it into its own string)."""

    def __init__(self, name: str) -> None:
        self.name = name


def jsonpath(document: Any, path: str) -> Any:
    """Argo's ``jsonpath(json, path)`` for the paths workflows use: ``$``, ``.key``, ``['key']``, ``[N]``."""
    data = json.loads(document) if isinstance(document, str | bytes) else document
    if not path.startswith("$"):
        raise ExpressionError(f"jsonpath {path!r} must start with '$'")
    for key, quoted, index in re.findall(r"\.([A-Za-z0-9_\-]+)|\['([^']*)'\]|\[(\d+)\]", path[1:]):
        try:
            data = data[int(index)] if index else data[key or quoted]
        except (KeyError, IndexError, TypeError) as exc:
            raise ExpressionError(f"jsonpath {path!r} finds nothing in {document!r}") from exc
    return data


def _as_number(value: Any, cast: Callable[[Any], Any]) -> Any:
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise ExpressionError(f"cannot convert {value!r} with {cast.__name__}") from exc


def _to_string(value: Any) -> str:
    """How Argo prints an expression's result into a template."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "jsonpath": jsonpath,
    "asInt": lambda v: _as_number(v, int),
    "asFloat": lambda v: _as_number(v, float),
    "int": lambda v: _as_number(v, int),
    "float": lambda v: _as_number(v, float),
    "string": _to_string,
    "toJson": lambda v: json.dumps(v, separators=(",", ":")),
    "len": len,
}


class _Parser:
    def __init__(self, src: str, env: Mapping[str, Any], *, bare_words_are_strings: bool) -> None:
        self.src = src
        self.tokens = _tokenize(src)
        self.pos = 0
        self.env = env
        self.bare = bare_words_are_strings

    # -- token helpers
    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def accept(self, *values: str) -> str | None:
        token = self.peek()
        if token and token[0] in ("op", "name") and token[1] in values:
            self.pos += 1
            return token[1]
        return None

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise ExpressionError(f"expected {value!r} in {self.src!r}")

    # -- grammar, lowest precedence first
    def parse(self) -> Any:
        value = self.ternary()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.src!r}")
        return self.resolve(value)

    def ternary(self) -> Any:
        condition = self.or_()
        if self.accept("?"):
            yes = self.ternary()
            self.expect(":")
            no = self.ternary()
            return yes if self.truth(condition) else no
        return condition

    def or_(self) -> Any:
        left = self.and_()
        while self.accept("||", "or"):
            right = self.and_()
            left = self.truth(left) or self.truth(right)
        return left

    def and_(self) -> Any:
        left = self.comparison()
        while self.accept("&&", "and"):
            right = self.comparison()
            left = self.truth(left) and self.truth(right)
        return left

    def comparison(self) -> Any:
        left = self.additive()
        while True:
            op = self.accept("==", "!=", "<=", ">=", "<", ">", "in")
            if not op:
                return left
            right = self.additive()
            a, b = self.resolve(left), self.resolve(right)
            if op == "==":
                left = self._equal(a, b)
            elif op == "!=":
                left = not self._equal(a, b)
            elif op == "in":
                left = a in b
            else:
                a, b = self._comparable(a, b)
                left = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    def additive(self) -> Any:
        left = self.multiplicative()
        while op := self.accept("+", "-"):
            right = self.resolve(self.multiplicative())
            left = self.resolve(left)
            left = left + right if op == "+" else left - right
        return left

    def multiplicative(self) -> Any:
        left = self.unary()
        while op := self.accept("*", "/", "%"):
            right = self.resolve(self.unary())
            left = self.resolve(left)
            if op == "*":
                left = left * right
            elif op == "/":
                left = left / right
            else:
                left = left % right
        return left

    def unary(self) -> Any:
        if self.accept("!", "not"):
            return not self.truth(self.unary())
        if self.accept("-"):
            return -self.resolve(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while True:
            if self.accept("."):
                token = self.peek()
                if not token or token[0] != "name":
                    raise ExpressionError(f"expected a name after '.' in {self.src!r}")
                self.pos += 1
                value = self.member(value, token[1])
            elif self.accept("["):
                key = self.resolve(self.ternary())
                self.expect("]")
                value = self.member(value, key)
            elif self.accept("("):
                if not isinstance(value, _Missing) or value.name not in FUNCTIONS:
                    raise ExpressionError(f"unknown function in {self.src!r}")
                args = []
                if not self.accept(")"):
                    args.append(self.resolve(self.ternary()))
                    while self.accept(","):
                        args.append(self.resolve(self.ternary()))
                    self.expect(")")
                value = FUNCTIONS[value.name](*args)
            else:
                return value

    def primary(self) -> Any:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"unexpected end of {self.src!r}")
        kind, text = token
        self.pos += 1
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "string":
            return bytes(text[1:-1], "utf-8").decode("unicode_escape")
        if kind == "op" and text == "(":
            value = self.ternary()
            self.expect(")")
            return value
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text in ("nil", "null"):
                return None
            if text in self.env:
                return self.env[text]
            return _Missing(text)
        raise ExpressionError(f"unexpected {text!r} in {self.src!r}")

    # -- semantics
    def member(self, value: Any, key: Any) -> Any:
        if isinstance(value, _Missing):
            raise ExpressionError(f"{value.name!r} is not defined in {self.src!r}")
        if isinstance(value, Mapping) and key in value:
            return value[key]
        if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            return value[key]
        raise ExpressionError(f"{key!r} is not defined in {self.src!r}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, _Missing):
            if self.bare:
                return value.name
            raise ExpressionError(f"{value.name!r} is not defined in {self.src!r}")
        return value

    def truth(self, value: Any) -> bool:
        value = self.resolve(value)
        if isinstance(value, bool):
            return value
        raise ExpressionError(f"{value!r} is not a boolean in {self.src!r}")

    @staticmethod
    def _equal(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):  # expr: true == 'true' is false
            return isinstance(a, bool) and isinstance(b, bool) and a is b
        return a == b

    @staticmethod
    def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
        def num(v: Any) -> Any:
            if isinstance(v, str):
                try:
                    return float(v)
                except ValueError:
                    return v
            return v

        return num(a), num(b)


def evaluate(src: str, env: Mapping[str, Any]) -> Any:
    """Evaluate an expr-lang expression (``{{=...}}`` tags, ``valueFrom``/``retryStrategy`` expressions)."""
    return _Parser(src, env, bare_words_are_strings=False).parse()


def evaluate_when(src: str) -> bool:
    """Evaluate a ``when`` string after substitution, as govaluate does; it must give a boolean."""
    result = _Parser(src, {}, bare_words_are_strings=True).parse()
    if not isinstance(result, bool):
        raise ExpressionError(f"when {src!r} does not evaluate to a boolean")
    return result


def to_template_string(value: Any) -> str:
    """The text an expression's result becomes inside a template."""
    return _to_string(value)
