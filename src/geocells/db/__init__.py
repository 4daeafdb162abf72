"""geocells.db: the cell-code database: store, build, merge, prototype upsampling."""
