package rules

import "moat/inspect"

func init() {
	facts["classifier"] = classifierFact("the statistical classifier's spam probability of the message, 0 (ham) to 1 (spam); unknown without a model trained on 200 spam and 200 ham",
		func(f *inspect.Facts) (float64, error) {
			r, err := f.Classifier()
			return r.Prob, err
		})
	facts["classifier_confidence"] = classifierFact("how much evidence the classifier's probability rests on, 0 to 1 (k/(k+10) for k telling tokens)",
		func(f *inspect.Facts) (float64, error) {
			r, err := f.Classifier()
			return r.Confidence, err
		})
}

// classifierFact is a number the classifier serves at data, from the
// decoded text; unknown (the rule's on_error decides) when there is no
// trained model.
func classifierFact(doc string, get func(f *inspect.Facts) (float64, error)) fact {
	return fact{stage: inspect.StageData, kind: kNumber, depth: inspect.DepthText, doc: doc, numErr: get,
		num: func(f *inspect.Facts) (float64, bool) {
			v, err := get(f)
			return v, err == nil
		}}
}
