package rules

import (
	"gopkg.in/yaml.v3"
)

// rateCond is {rate_limit: NAME}: true when the configured limit NAME is
// exceeded for this session (the engine counted it at its stage, see
// inspect.RateLimitStage), unknown without a store or after a store
// failure, so that on_error decides and the default fails open.
type rateCond struct{ name string }

func (r rateCond) eval(c *evalCtx) tri {
	exceeded, err := c.f.RateLimit(r.name)
	if err != nil {
		return c.unknownAs
	}
	return triOf(exceeded)
}

// rateLimit compiles {rate_limit: NAME}; the name must be one of
// Options.RateLimits, counted no later than the rule's stage.
func (c *compiler) rateLimit(v *yaml.Node) cond {
	name := c.p.str(v, "rate_limit")
	if name == "" {
		return nil
	}
	stage, ok := c.p.opts.RateLimits[name]
	if !ok {
		c.p.errf(v, "unknown rate limit %q (configure it under rate_limits)", name)
		return nil
	}
	if stage > c.stage {
		c.p.errf(v, "rate limit %q is counted at the %s stage, and this rule runs at %s", name, stage, c.stage)
		return nil
	}
	return rateCond{name}
}
