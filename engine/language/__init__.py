"""The policy language: policy text in, a checked plan out, before any data is read.

load (YAML with locations) -> validate (JSON Schema and meaning) -> parse (expressions to the AST in
`nodes`) -> typecheck (`types`, `namespaces`, `expressions`, `calls`) -> plan (the steps per entity);
`compile` runs them in one call. Also here: the policy model (`model`), the function catalogue
(`functions`), the errors every layer raises (`errors`), how a number is written (`numbers`) and
kam's version. Imports no data library, so `kam check` and the pre-commit hooks install and start
light (a test holds it to that).
"""
