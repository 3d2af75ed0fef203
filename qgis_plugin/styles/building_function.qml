<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Building function from a multimodal model, coloured by its R/C/I roll-up (rci_class); labels show the function -->
<qgis version="3.22.16" styleCategories="AllStyleCategories">
  <renderer-v2 type="categorizedSymbol" attr="rci_class" symbollevels="0" enableorderby="0" forceraster="0">
    <categories>
      <category value="residential" symbol="0" label="residential" render="true"/>
      <category value="commercial" symbol="1" label="commercial" render="true"/>
      <category value="industrial" symbol="2" label="industrial" render="true"/>
      <category value="" symbol="3" label="other / no valid answer" render="true"/>
    </categories>
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="232,197,71,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="1" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="215,38,61,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="2" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="106,76,147,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="3" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="160,160,160,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
    </symbols>
  </renderer-v2>
  <previewExpression>"function"</previewExpression>
  <mapTip>[% "building_id" %]: [% "function" %] ([% "confidence" %])&lt;br&gt;[% "reason" %]</mapTip>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
</qgis>
