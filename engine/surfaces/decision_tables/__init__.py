"""Decision tables edited in Excel: `kam export` writes a policy folder as a workbook, `kam import`
reads it back into the YAML.

The stages, a module each:

- `tables`: what a policy folder shows as tables (params, derived features with their lookup grids,
  one table per decision), worked out from the YAML texts alone, so that the export and the import
  see the same tables;
- `writer`: the workbook a person edits (XlsxWriter; every text a text cell, never a formula);
- `reader`: the workbook read back (python-calamine), bounded before a cell is read, every edited
  cell parsed into the YAML value it means or refused with its reference (`tier!B7`);
- `changes`: the edits the workbook makes, against the texts it was exported from, applied to the
  files as they are now with the byte-preserving editor (`engine.language.edit`), refused where a
  file changed on disk in the same place, checked as `kam check` checks before anything is written.

The workbook carries the texts it was exported from (a very hidden sheet `_kam`, with their sha256),
so that an edit is what differs from the export, not from whatever the files hold today.
"""
