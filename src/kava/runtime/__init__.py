"""What every command shares at run time, below the method: exit statuses (`exits`), stopping on a
signal (`stop`), owning and writing output folders atomically (`outputs`), writes the disk refuses
(`disk`), the names inside a run folder (`layout`), checks that saved files are whole
(`integrity`), config validation with one-line errors (`validation`) and progress that is a bar
on a terminal, lines in a log (`progress`)."""
