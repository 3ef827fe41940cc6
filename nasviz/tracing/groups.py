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

Elements can be *refined*: when an op needs part of an element (``x.chunk(2, dim=1)``, the
heads of an attention projection, the groups of a grouped conv) or a finer structure (a channel
shuffle interleaves two halves: each channel of the result's source then stands for two
consecutive channels), :meth:`Coupling.unify` and :meth:`Coupling.split` replace the element by
a layout over new, smaller elements (:meth:`Coupling.resolve` expands it). The producer's width
then becomes e.g. a concatenation of two coupled halves, which is exactly what it must keep for
the op to stay valid at every width.

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

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Cat", "Coupling", "Element", "Expr", "Rep", "Sym", "expr_size", "expr_syms"]

#: an atom of a canonical layout: ``inner`` consecutive features per channel of one element
#: (element index, element size, inner)
_Atom = tuple[int, int, int]


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
    #: group root -> the layout over finer elements it was refined into
    _refined: dict[int, Expr] = field(default_factory=dict)

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
        """The root of ``e``'s group (compressing the path on the way)."""
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
        mine = self._reasons.setdefault(lo, [])
        fresh = [r for r in moved if r not in mine]
        mine.extend(fresh)
        if not mine:
            del self._reasons[lo]
        sub_hi, sub_lo = self._refined.pop(hi, None), self._refined.get(lo)
        if sub_hi is not None and sub_lo is None:
            self._refined[lo] = sub_lo = sub_hi
            fresh = mine  # the parts of ``hi`` learn every reason of ``lo``
        elif sub_hi is not None and sub_lo is not None:
            self.unify(sub_lo, sub_hi, "coupled with a differently split dimension")
        if sub_lo is not None:
            for r in fresh:
                self.fix_expr(sub_lo, r)

    def fix(self, e: int, reason: str) -> None:
        """Make ``e``'s group static because of ``reason`` (reasons accumulate, unique)."""
        root = self.find(e)
        reasons = self._reasons.setdefault(root, [])
        if reason not in reasons:
            reasons.append(reason)
            sub = self._refined.get(root)
            if sub is not None:
                self.fix_expr(sub, reason)

    def fix_expr(self, e: Expr, reason: str) -> None:
        """Fix every element the layout ``e`` refers to, because of ``reason``."""
        for s in expr_syms(e):
            self.fix(s.elem, reason)

    def is_fixed(self, e: int) -> bool:
        """Whether ``e``'s group is static (it has at least one reason)."""
        return bool(self._reasons.get(self.find(e)))

    def reasons(self, e: int) -> list[str]:
        """Why ``e``'s group is static, in the order the reasons came (empty: it is prunable)."""
        return list(self._reasons.get(self.find(e), []))

    def is_live(self, e: Expr) -> bool:
        """Whether any element of the layout can still be pruned."""
        return any(not self.is_fixed(s.elem) for s in expr_syms(self.resolve(e)))

    # -- refinement ----------------------------------------------------------------------------
    def resolve(self, e: Expr) -> Expr:
        """``e`` over group roots that are not refined (refinements expanded, nested repeats and
        concatenations flattened).
        """
        if isinstance(e, Sym):
            root = self.find(e.elem)
            sub = self._refined.get(root)
            return Sym(root, e.size) if sub is None else self.resolve(sub)
        if isinstance(e, Cat):
            return make_cat([self.resolve(p) for p in e.parts])
        return make_rep(self.resolve(e.src), e.inner)

    def _atoms(self, e: Expr, inner: int = 1) -> list[_Atom]:
        """The canonical form of ``e``: repeats pushed inside concatenations."""
        if isinstance(e, Sym):
            root = self.find(e.elem)
            sub = self._refined.get(root)
            return [(root, e.size, inner)] if sub is None else self._atoms(sub, inner)
        if isinstance(e, Cat):
            return [a for p in e.parts for a in self._atoms(p, inner)]
        return self._atoms(e.src, inner * e.inner)

    def _refine(self, root: int, parts: list[int], inner: int = 1) -> list[int]:
        """Refine unrefined ``root`` into a concatenation of new elements of ``parts`` channels
        (``inner > 1``: into one element each of whose channels is ``inner`` features).
        """
        el = self.elements[root]
        made = [self.new(n, el.producer, el.origin) for n in parts]
        syms: list[Expr] = [Sym(m, n) for m, n in zip(made, parts)]
        self._refined[root] = make_rep(syms[0], inner) if inner > 1 else make_cat(syms)
        for r in self._reasons.get(root, []):
            for m in made:
                self.fix(m, r)
        return made

    def _cut(self, atom: _Atom, at: int) -> tuple[_Atom, _Atom] | None:
        """Split an atom after ``at`` features (refining its element)."""
        root, size, inner = atom
        if at % inner:
            return None  # the cut falls inside one channel's features
        head = at // inner
        a, b = self._refine(root, [head, size - head])
        return (a, head, inner), (b, size - head, inner)

    def _fresh(self, atom: _Atom) -> list[_Atom]:
        root, size, inner = atom
        return self._atoms(Sym(root, size), inner)

    def _unify_atoms(self, x: _Atom, y: _Atom) -> bool:
        (rx, nx, ix), (ry, _ny, iy) = x, y
        if ix == iy:
            self.union(rx, ry)
            return True
        if ix > iy:
            (rx, nx, ix), (ry, _ny, iy) = y, x
        q = iy // ix  # x = Rep(rx, ix) and y = Rep(ry, iy): rx must be Rep(new, q)
        if iy % ix or nx % q:
            return False
        (sub,) = self._refine(rx, [nx // q], inner=q)
        self.union(sub, ry)
        return True

    def unify(self, a: Expr, b: Expr, reason: str) -> bool:
        """Couple two layouts channel by channel, refining elements where their structure
        differs; if they cannot be matched, fix both with ``reason``.

        Returns whether the layouts could be matched.
        """
        if expr_size(a) != expr_size(b):
            self.fix_expr(a, reason)
            self.fix_expr(b, reason)
            return False
        xs: deque[_Atom] = deque(self._atoms(a))
        ys: deque[_Atom] = deque(self._atoms(b))
        while xs and ys:
            x, y = self._pop_fresh(xs), self._pop_fresh(ys)
            fx_, fy = x[1] * x[2], y[1] * y[2]
            if fx_ != fy:
                big, small, queue = (x, fy, xs) if fx_ > fy else (y, fx_, ys)
                cut = self._cut(big, small)
                if cut is None:
                    self.fix_expr(a, reason)
                    self.fix_expr(b, reason)
                    return False
                queue.extendleft((cut[1], cut[0]))
                (ys if big is x else xs).appendleft(y if big is x else x)
                continue  # both are looked at again: the cut may have refined the other's root
            if not self._unify_atoms(x, y):
                self.fix_expr(a, reason)
                self.fix_expr(b, reason)
                return False
        return True

    def _pop_fresh(self, queue: deque[_Atom]) -> _Atom:
        """The next atom of ``queue`` whose element is an unrefined root (expanding others)."""
        while True:
            atom = queue.popleft()
            root = self.find(atom[0])
            if root == atom[0] and root not in self._refined:
                return atom
            queue.extendleft(reversed(self._fresh(atom)))

    def split(self, e: Expr, pieces: int, reason: str) -> list[Expr] | None:
        """Cut ``e`` into ``pieces`` equal consecutive layouts and couple them with each other
        (ops such as ``chunk`` split a pruned tensor evenly, so every piece must keep the same
        channels). ``None`` (and ``e`` fixed with ``reason``) if it cannot be cut evenly.
        """
        total = expr_size(e)
        if pieces < 1 or total % pieces:
            self.fix_expr(e, reason)
            return None
        if pieces == 1:
            return [e]
        step = total // pieces
        atoms: deque[_Atom] = deque(self._atoms(e))
        out: list[Expr] = []
        current: list[Expr] = []
        filled = 0
        while atoms:
            atom = self._pop_fresh(atoms)
            root, size, inner = atom
            if filled + size * inner > step:
                cut = self._cut(atom, step - filled)
                if cut is None:
                    self.fix_expr(e, reason)
                    return None
                atom = cut[0]
                atoms.appendleft(cut[1])
                root, size, inner = atom
            current.append(make_rep(Sym(root, size), inner))
            filled += size * inner
            if filled == step:
                out.append(make_cat(current))
                current, filled = [], 0
        for piece in out[1:]:
            if not self.unify(out[0], piece, reason):
                self.fix_expr(e, reason)
                return None
        return out
