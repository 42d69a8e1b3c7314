"""What a GraphQL operation may cost, estimated from its document alone.

Each field selected counts 1, times the items of the lists it is in:

- a field with a page size (`first`, `limit`) gives at most that many items.
  When it returns a list (`errorPatterns`), the fields below it count that
  many times; when it returns a page object (`tasks`, a `TaskConnection`),
  its lists (`nodes`, `edges`) are that page, so the fields below *them*
  count that many times (and the page is not counted twice);
- any other list counts `LIST_SIZE` items;
- the page size is the literal given (at most what the scheduler accepts,
  `PAGE_SIZES`), the argument's default when left out, and, when it is a
  variable, the largest the scheduler accepts: validation runs before
  variables are known, and is cached per document;
- `__typename` and introspection count nothing (introspection is bounded by
  the schema, and off where the gateway is exposed);
- a fragment counts where it is spread, each operation on its own.

So `{ task(id: $id) { id state } }` costs 3 and `{ tasks(first: 50) { nodes
{ id state } } }` 1 + 1 + 50 * 2 = 102. An operation whose estimate passes
the limit is refused before it runs (`extensions.code` INVALID_ARGUMENT).

The check is a validation rule (`rule`), made once per schema, so Strawberry's
validation cache keeps each document's verdict: a document is estimated once,
not on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import (
    SKIP,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionNode,
    VisitorAction,
    get_named_type,
    type_from_ast,
)
from graphql.validation import ValidationRule

from treadle.common.errors import InvalidArgument

#: Items a list without a page size counts for.
LIST_SIZE = 10
#: The page-size arguments, with the largest value the scheduler accepts.
PAGE_SIZES = {"first": 1000, "last": 1000, "limit": 100}


class CostLimit(ValidationRule):
    """Refuses an operation whose estimated cost is over `max_cost` (see `rule`)."""

    max_cost = 0

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        #: Each fragment's cost, by name and page size, counted once.
        self._fragments: dict[tuple[str, int | None], int] = {}

    def enter_operation_definition(
        self, node: OperationDefinitionNode, *_args: Any
    ) -> VisitorAction:
        root = self.context.get_type()
        if not isinstance(root, GraphQLObjectType):
            return SKIP  # an operation type the schema lacks: reported by another rule
        cost = self._selections(node.selection_set.selections, root, None)
        if cost > self.max_cost:
            self.report_error(
                GraphQLError(
                    f"the operation's estimated cost is {cost:,}, over the limit of "
                    f"{self.max_cost:,}: select fewer fields or ask for smaller pages "
                    "(each field counts 1, times the items of the lists it is in)",
                    node,
                    extensions={"code": InvalidArgument.code},
                )
            )
        return SKIP  # the operation is done; fragments are counted where spread

    def _selections(
        self, selections: Sequence[SelectionNode], parent: GraphQLNamedType, page: int | None
    ) -> int:
        """The cost of `selections` on one `parent` object; `page`: the page size
        of the page object they are selected on, for its lists."""
        total = 0
        for selection in selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, page)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = type_from_ast(self.context.schema, condition) if condition else parent
                if isinstance(kind, GraphQLNamedType):
                    total += self._selections(selection.selection_set.selections, kind, page)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value, page)
        return total

    def _fragment(self, name: str, page: int | None) -> int:
        key = (name, page)
        if key not in self._fragments:
            self._fragments[key] = 0  # a cycle counts nothing (NoFragmentCycles refuses it)
            fragment = self.context.get_fragment(name)
            kind = fragment and type_from_ast(self.context.schema, fragment.type_condition)
            if fragment is not None and isinstance(kind, GraphQLNamedType):
                cost = self._selections(fragment.selection_set.selections, kind, page)
                self._fragments[key] = cost
        return self._fragments[key]

    def _field(self, node: FieldNode, parent: GraphQLNamedType, page: int | None) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        definition = getattr(parent, "fields", {}).get(name)
        if definition is None:
            return 1  # no such field: reported by another rule
        if node.selection_set is None:
            return 1  # a scalar, or a list of them
        kind = definition.type
        if isinstance(kind, GraphQLNonNull):
            kind = kind.of_type
        size = _page_size(node, definition.args)
        if isinstance(kind, GraphQLList):
            items = size if size is not None else page if page is not None else LIST_SIZE
            below = None
        else:
            items, below = 1, size
        selections = node.selection_set.selections
        return 1 + items * self._selections(selections, get_named_type(kind), below)


def _page_size(node: FieldNode, arguments: dict[str, Any]) -> int | None:
    """The page size a field asks for (the largest of its page-size arguments
    given or defaulted), or None when it has no page-size argument."""
    sizes = []
    unsized = []
    for name, largest in PAGE_SIZES.items():
        if name not in arguments:
            continue
        given = next((a.value for a in node.arguments or () if a.name.value == name), None)
        if given is None:
            default = arguments[name].default_value
            if isinstance(default, int):
                sizes.append(min(max(default, 0), largest))
            else:
                unsized.append(largest)  # no default: as large as it may be
        elif isinstance(given, IntValueNode):
            sizes.append(min(max(int(given.value), 0), largest))
        elif not isinstance(given, NullValueNode):
            sizes.append(largest)  # a variable: any value up to the largest
    if sizes:
        return max(sizes)
    return max(unsized) if unsized else None


def rule(max_cost: int) -> type[CostLimit]:
    """The rule class for a limit of `max_cost`; make it once per schema (the
    validation cache is keyed by the rule classes)."""
    return type("CostLimit", (CostLimit,), {"max_cost": max_cost})
