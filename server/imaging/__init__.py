"""Image input: caps before decoding, PNG/JPEG/DICOM decode, preprocessing."""
