"""Channel coupling: symbolic channel layouts and the union-find that merges coupled dimensions.

Tracing gives every channel dimension a prunable layer *produces* (a conv's ``out_channels``, a
Linear's ``out_features``) one *element*. Operators combine elements into *layouts*
(:data:`Expr`) that describe what the channel dimension of a tensor is made of:

* :class:`Sym` - exactly the channels of one element;
* :class:`Cat` - a ``torch.cat`` of several layouts, in order;
* :class:`Rep` - every channel of a layout repeated ``inner`` times consecutively (flatten).

A consumer's input dimension *is* a layout (a conv after a concat reads a :class:`Cat`). Ops that
need two dimensions to have the same channels (residual adds, norms, depthwise convs) *couple*
elements: :meth:`Coupling.union` puts them in one group, which becomes one hparam. Anything that
cannot follow a pruned width *fixes* the element with a human-readable reason; a group with at
least one fixed element stays static, and the reasons say why.

Example::

    >>> c = Coupling()
    >>> a = c.new(16, producer=("conv1", "out_channels"))
    >>> b = c.new(16, producer=("down", "out_channels"))
    >>> c.union(a, b)               # a residual add
    >>> c.fix(b, "output layer")
    >>> c.reasons(a)
    ['output layer']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Cat", "Coupling", "Element", "Expr", "Rep", "Sym", "expr_size", "expr_syms"]


@dataclass(frozen=True)
class Sym:
    """The channels of one element (``size`` channels)."""

    elem: int
    size: int


@dataclass(frozen=True)
class Cat:
    """Concatenation of layouts along the channel dimension."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Rep:
    """Each channel of ``src`` expanded to ``inner`` consecutive features (``flatten``)."""

    src: Expr
    inner: int


Expr = Sym | Cat | Rep


def expr_size(e: Expr) -> int:
    """Number of channels a layout spans at full size."""
    if isinstance(e, Sym):
        return e.size
    if isinstance(e, Cat):
        return sum(expr_size(p) for p in e.parts)
    return expr_size(e.src) * e.inner


def expr_syms(e: Expr) -> Iterator[Sym]:
    """Every :class:`Sym` a layout refers to (in order, with repeats)."""
    if isinstance(e, Sym):
        yield e
    elif isinstance(e, Cat):
        for p in e.parts:
            yield from expr_syms(p)
    else:
        yield from expr_syms(e.src)


def make_cat(parts: list[Expr]) -> Expr:
    """A :class:`Cat` with nested concatenations flattened (a single part is returned as is)."""
    flat: list[Expr] = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, Cat) else (p,))
    return flat[0] if len(flat) == 1 else Cat(tuple(flat))


def make_rep(src: Expr, inner: int) -> Expr:
    """A :class:`Rep` (``inner == 1`` is the layout itself; nested repeats multiply)."""
    if inner == 1:
        return src
    if isinstance(src, Rep):
        return Rep(src.src, src.inner * inner)
    return Rep(src, inner)


@dataclass
class Element:
    """One produced channel dimension: its size, its producer and where it came from."""

    index: int
    size: int
    producer: tuple[str, str] | None
    origin: str


@dataclass
class Coupling:
    """Union-find over elements, with the reasons that fix a group (see the module docstring)."""

    elements: list[Element] = field(default_factory=list)
    _parent: list[int] = field(default_factory=list)
    _reasons: dict[int, list[str]] = field(default_factory=dict)

    def new(self, size: int, producer: tuple[str, str] | None = None, origin: str = "") -> int:
        """A new element of ``size`` channels (``producer`` = (module, attr) that makes it)."""
        idx = len(self.elements)
        self.elements.append(Element(idx, size, producer, origin))
        self._parent.append(idx)
        return idx

    def new_fixed(self, size: int, reason: str) -> int:
        """A new element that is static from the start (a model input, a parameter ...)."""
        idx = self.new(size, None, reason)
        self.fix(idx, reason)
        return idx

    def find(self, e: int) -> int:
        parent = self._parent
        root = e
        while parent[root] != root:
            root = parent[root]
        while parent[e] != root:
            parent[e], e = root, parent[e]
        return root

    def union(self, a: int, b: int) -> None:
        """Couple two elements of equal size (their groups become one)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.elements[ra].size != self.elements[rb].size:
            reason = (
                f"coupled with a dimension of another size ({self.elements[ra].size} vs "
                f"{self.elements[rb].size})"
            )
            self.fix(ra, reason)
            self.fix(rb, reason)
            return
        # the lower index stays root: the group's first producer is found from the root
        lo, hi = (ra, rb) if ra < rb else (rb, ra)
        self._parent[hi] = lo
        moved = self._reasons.pop(hi, [])
        if moved:
            mine = self._reasons.setdefault(lo, [])
            mine.extend(r for r in moved if r not in mine)

    def fix(self, e: int, reason: str) -> None:
        """Make ``e``'s group static because of ``reason`` (reasons accumulate, unique)."""
        reasons = self._reasons.setdefault(self.find(e), [])
        if reason not in reasons:
            reasons.append(reason)

    def fix_expr(self, e: Expr, reason: str) -> None:
        for s in expr_syms(e):
            self.fix(s.elem, reason)

    def is_fixed(self, e: int) -> bool:
        return bool(self._reasons.get(self.find(e)))

    def reasons(self, e: int) -> list[str]:
        return list(self._reasons.get(self.find(e), []))

    def is_live(self, e: Expr) -> bool:
        """Whether any element of the layout can still be pruned."""
        return any(not self.is_fixed(s.elem) for s in expr_syms(e))

    def unify(self, a: Expr, b: Expr, reason: str) -> bool:
        """Couple two layouts channel by channel; if their structure differs, fix both.

        Returns whether the layouts could be matched structurally.
        """
        if isinstance(a, Sym) and isinstance(b, Sym):
            self.union(a.elem, b.elem)
            return True
        if (
            isinstance(a, Cat)
            and isinstance(b, Cat)
            and len(a.parts) == len(b.parts)
            and all(expr_size(x) == expr_size(y) for x, y in zip(a.parts, b.parts))
        ):
            results = [self.unify(x, y, reason) for x, y in zip(a.parts, b.parts)]
            return all(results)
        if isinstance(a, Rep) and isinstance(b, Rep) and a.inner == b.inner:
            return self.unify(a.src, b.src, reason)
        self.fix_expr(a, reason)
        self.fix_expr(b, reason)
        return False
