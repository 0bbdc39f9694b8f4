//! Reports: the versioned JSON contract, the Markdown matrix, the HTML page and performance figures.
