<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Building-use classes (default model-card colours): 0 non-building (transparent), 1 residential, 2 commercial, 3 industrial; 255 nodata -->
<qgis version="3.22.16" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
        <paletteEntry value="0" color="#000000" alpha="0" label="non-building"/>
        <paletteEntry value="1" color="#e8c547" alpha="255" label="residential"/>
        <paletteEntry value="2" color="#d7263d" alpha="255" label="commercial"/>
        <paletteEntry value="3" color="#6a4c93" alpha="255" label="industrial"/>
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
