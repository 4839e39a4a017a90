package meta

func benchNetEngines() []engineCase { return nil }
