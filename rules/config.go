package rules

import "fmt"

// Config is the rules section of moat's configuration file.
type Config struct {
	// File is the rules file. Empty: the built-in default rules.
	File string `yaml:"file"`
	// Mode is "enforce" or "monitor": evaluate every rule and log what
	// would have happened, but never refuse or tag.
	Mode string `yaml:"mode"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = "enforce"
	}
}

// Validate checks the section.
func (c *Config) Validate() error {
	if c.Mode != "enforce" && c.Mode != "monitor" {
		return fmt.Errorf("rules.mode: %q is not enforce or monitor", c.Mode)
	}
	return nil
}

// LoadConfigured loads the rules the configuration names: the file, or
// the built-in defaults.
func LoadConfigured(cfg Config, opts Options) (*Set, error) {
	opts.Mode = cfg.Mode
	if cfg.File == "" {
		return Default(opts)
	}
	return Load(cfg.File, opts)
}
